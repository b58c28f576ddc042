"""The reference for procgate's schedule times: croniter, the cron library
Python schedulers (Airflow, Celery beat's cousins) build on.

Reads a JSON list of {"cron", "time_zone", "after", "count"} on stdin and
writes, for each, the next `count` ticks strictly after `after` (RFC 3339)
as RFC 3339 UTC strings, in a JSON list."""

import json
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from croniter import croniter


def ticks(cron, time_zone, after, count):
    start = datetime.fromisoformat(after.replace("Z", "+00:00")).astimezone(ZoneInfo(time_zone))
    walk = croniter(cron, start)
    return [
        walk.get_next(datetime).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _ in range(count)
    ]


cases = json.load(sys.stdin)
json.dump([ticks(c["cron"], c["time_zone"], c["after"], c["count"]) for c in cases], sys.stdout)
