"""The Celery app and its task: claim, run, report, store. Where inference meets the database."""
