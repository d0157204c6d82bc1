"""`podq web`: a dashboard of queues, jobs and workers (docs/web.md).

It uses the engine's public API only (Queue, Job, the change feed) and imports
nothing of Kubernetes: app and routes in handlers, pages in render (around
templates/base.html), reads in data, charts in charts, the shared change feed in feed,
sessions and CSRF in auth, the command in main.
"""
