"""Stored and logged deliveries: the recovery sweep and polling mode over the App's delivery log
(service.py, its pure decisions in sweep.py), and the replay of stored deliveries (replay.py)."""
