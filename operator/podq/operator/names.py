"""Names the operator owns: API coordinates, annotations, labels and derived keys."""

from __future__ import annotations

from datetime import datetime

from podq.queue.keys import resource_job_key

GROUP = "podq.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
JOBS = "jobs"
CRONJOBS = "cronjobs"

# kopf keeps handler progress and the last handled spec in annotations under this
# prefix, and holds CronJobs with KOPF_FINALIZER until their daemon stopped.
ANNOTATION_PREFIX = GROUP
KOPF_FINALIZER = f"{GROUP}/finalizer"
# The status writer holds Job resources with this one until their job is aborted. It
# must differ from kopf's: kopf removes its own finalizer from resources on which no
# kopf handler needs it, and no kopf handler deals with Job deletion.
JOB_FINALIZER = f"{GROUP}/abort-job"

# Worker Deployments opt in to autoscaling with this label (value: queue name).
LABEL_QUEUE = f"{GROUP}/queue"
ANNOTATION_MIN_REPLICAS = f"{GROUP}/min-replicas"
ANNOTATION_MAX_REPLICAS = f"{GROUP}/max-replicas"
ANNOTATION_CONCURRENCY = f"{GROUP}/concurrency"
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

# Child Jobs of a CronJob carry these, so history and concurrency can find them.
LABEL_CRONJOB = f"{GROUP}/cronjob"
ANNOTATION_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
# A child made by `podq cronjob run` (batch/v1: cronjob.kubernetes.io/instantiate): it
# fills no slot of the schedule.
ANNOTATION_INSTANTIATE = f"{GROUP}/instantiate"

MAX_CRONJOB_NAME = 52  # 63 (label value limit) minus "-" and a 10-digit epoch


def job_key(namespace: str, name: str, uid: str, spec_key: str | None = None,
            status_key: str | None = None) -> str:
    """The Redis key of the job a Job resource stands for (podq.queue.keys).

    Deterministic, so a restarted operator, a re-delivered event or a second operator
    computes the same key and the queue's uniqueness refuses the duplicate. It begins
    with the namespace: a Job in another namespace with the same `spec.key` is another
    job. Upgrade: operators before the namespaced form used `spec.key` as it is; a resource whose
    status shows it was enqueued under that old form (`status.jobKey == spec.key`) keeps
    it until the resource is deleted, so its queued or running job is neither lost nor
    run twice. Only resources with no such status get the namespaced form. A bare key
    holding a '/' is never followed: `team-a/nightly` is namespace team-a's job, and a
    tenant who may write its Job's status (`jobs/status`) could otherwise reach it.
    """
    if spec_key and status_key == spec_key and "/" not in spec_key:
        return spec_key
    return resource_job_key(namespace, name, uid, spec_key)


def cron_child_name(cronjob_name: str, slot: datetime) -> str:
    """Name of the Job a CronJob creates for one schedule slot.

    One name per slot makes AlreadyExists the guard against firing twice for it, across
    restarts and operators. Epoch seconds (not minutes as batch/v1 does) because
    6-field schedules fire more than once a minute.
    """
    return f"{cronjob_name}-{int(slot.timestamp())}"
