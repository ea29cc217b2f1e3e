"""Our own merge queue per project and base branch: its state and events (model.py) and the pure
deciding (decide.py: speculative, batching, searching for a failing batch's culprit). The I/O shell
(persistence, building candidates in the mirror, validating, landing) drives `decide.advance`."""
