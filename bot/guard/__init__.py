"""Abuse from outside, at the HTTP edges: per-client rate limits (`ratelimit`), who the client is
behind trusted proxies (`client_address`), GitHub's webhook source addresses (`hook_sources`), and the
`RequestGuard` the composition root builds from them for the webhook ingress and the dashboard
(`request_guard`)."""
