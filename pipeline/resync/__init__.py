"""The resync of open pull requests (service.py), and what it decides (decision.py)."""
