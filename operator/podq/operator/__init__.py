"""The podq Kubernetes operator: Job and CronJob resources, status mirroring, autoscaling.

This subpackage is the only part of podq that imports kopf or kubernetes_asyncio.
Pure decisions live in small modules without I/O (names, jobspec, status, cron,
scaling, coalesce); the modules that talk to Kubernetes and Redis take their clients
as parameters; `handlers` wires them to kopf and `main` runs it all.
"""
