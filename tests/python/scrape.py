"""Scrapes procgate's operations listener as Prometheus and a load balancer
would, and prints what it found as one JSON line.

usage: scrape.py metrics URL [ACCEPT]  -> {"content_type", "eof", "types", "samples"}
       scrape.py status URL            -> {"status", "body"}

The metrics are parsed with prometheus_client's own text parser (the
Prometheus format, or OpenMetrics when ACCEPT asks for it).
"""

import json
import sys
import urllib.error
import urllib.request

mode, url = sys.argv[1], sys.argv[2]

if mode == "status":
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    print(json.dumps({"status": status, "body": body}))
    sys.exit(0)

request = urllib.request.Request(url)
if len(sys.argv) > 3:
    request.add_header("Accept", sys.argv[3])
with urllib.request.urlopen(request, timeout=10) as answer:
    content_type = answer.headers["Content-Type"]
    text = answer.read().decode()

if content_type.startswith("application/openmetrics-text"):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families

types, samples = {}, []
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
print(
    json.dumps(
        {
            "content_type": content_type,
            "eof": text.rstrip().endswith("# EOF"),
            "types": types,
            "samples": samples,
        }
    )
)
