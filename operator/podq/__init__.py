"""podq: async Python jobs on Redis with SAQ's API, run by a Kubernetes operator.

from podq import Job, Queue, Worker, CronJob, Status
"""

from podq.job import CronJob, Job, Status
from podq.queue import Change, JobError, Queue
from podq.worker import Worker

__all__ = ["Change", "CronJob", "Job", "JobError", "Queue", "Status", "Worker"]
