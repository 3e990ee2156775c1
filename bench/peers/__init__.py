"""Drivers for the peers (RQ, Celery); they run in the peers' own virtualenv, not in sigrun's."""
