"""SAQ's README example (SAQ 0.26.4, MIT licence), as written for SAQ: a settings module
with a function, a cron job and startup/shutdown/before/after hooks, and a client that
enqueues from it. docs/saq-compatibility.md shows its migration to podq: `saq` becomes
`podq` in the imports and nothing else changes (tests/engine/test_saq_example.py runs
this file on SAQ, and on podq with only its imports rewritten).

The Redis URL is read from REDIS_URL (the README has "redis://localhost"), and the
README's enqueue snippet is wrapped in `main()`, printing `job.result` (the README's
`job.results` is a typo: Job has no such attribute, on SAQ either) and waiting up to
30 s rather than 1 s for the first job (a worker just started on a busy machine).

Worker:  saq saq_readme.settings          (podq: podq worker saq_readme.settings)
Client:  python saq_readme.py
"""

import asyncio
import os
import time

from saq import CronJob, Queue


class DBHelper:
    """Helper class for demo purposes"""

    async def disconnect(self):
        print("Disconnecting from the database")

    async def connect(self):
        print("Connectiong...")

    def __str__(self):
        return "Your DBHelper at work"


# all functions take in context dict and kwargs
async def test(ctx, *, a):
    await asyncio.sleep(0.5)
    # result should be json serializable
    # custom serializers and deserializers can be used through Queue(dump=,load=)
    return {"x": a}


async def cron(ctx):
    print("i am a cron job")


async def startup(ctx):
    helper = DBHelper()
    await helper.connect()
    ctx["db"] = helper


async def shutdown(ctx):
    await ctx["db"].disconnect()


async def before_process(ctx):
    print(ctx["job"], ctx["db"])


async def after_process(ctx):
    pass


queue = Queue.from_url(os.environ.get("REDIS_URL", "redis://localhost"))

settings = {
    "queue": queue,
    "functions": [test],
    "concurrency": 10,
    "cron_jobs": [CronJob(cron, cron="* * * * * */5")],  # run every 5 seconds
    "startup": startup,
    "shutdown": shutdown,
    "before_process": before_process,
    "after_process": after_process,
}


async def main():
    # schedule a job normally
    job = await queue.enqueue("test", a=1)

    # wait up to 30 seconds for the job to complete (the README: 1, tight on a busy machine)
    await job.refresh(30)
    print(job.result)

    # run a job and return the result
    print(await queue.apply("test", a=2))

    # run a job with custom polling interval to check status more frequently
    print(await queue.apply("test", a=2, poll_interval=0.1))

    # Run multiple jobs concurrently and collect the results into a list
    print(await queue.map("test", [{"a": 3}, {"a": 4}]))

    # schedule a job in 10 seconds
    await queue.enqueue("test", a=1, scheduled=time.time() + 10)


if __name__ == "__main__":
    asyncio.run(main())
