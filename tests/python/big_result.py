"""Reads one big result three ways, as a data team's Python would: the
ExecuteStream stream, a job's ReadJobResult stream, and the same job through
pyarrow's Flight client. Prints what it read as one JSON line.

usage: big_result.py ADDRESS ROWS STUBS_DIR
"""

import json
import sys
import time

address, rows, stubs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import pyarrow.compute as compute  # noqa: E402
import pyarrow.flight as flight  # noqa: E402
from procgate.v1 import procgate_pb2 as pb  # noqa: E402
from procgate.v1 import procgate_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(address)
service = rpc.ProcedureServiceStub(channel)
call = pb.ProcedureCall(
    procedure="numbers",
    params=[pb.Param(name="n", value=pb.Value(integer_value=rows))],
    returns=pb.VALUE_TYPE_CURSOR,
)


def summed(parts):
    """Rows and the sum of their first column; the columns of the start."""
    count, total, columns = 0, 0, None
    for part in parts:
        kind = part.WhichOneof("kind")
        if kind == "start":
            columns = [c.name for c in part.start.columns]
        elif kind == "rows":
            for row in part.rows.rows:
                total += row.values[0].integer_value
            count += len(part.rows.rows)
    return count, total, columns


started = time.monotonic()
stream_rows, stream_sum, stream_columns = summed(
    service.ExecuteStream(pb.ExecuteSyncRequest(call=call))
)
stream_seconds = time.monotonic() - started

job = service.SubmitAsync(pb.SubmitAsyncRequest(call=call))
for snapshot in service.WatchJob(pb.WatchJobRequest(id=job.id)):
    state = snapshot.state
if state != pb.JOB_STATE_COMPLETED:
    sys.exit(f"the job ended {pb.JobState.Name(state)}: {snapshot.error.message}")
inline = snapshot.return_value.rows_value

read_rows, read_sum, _ = summed(
    service.ReadJobResult(pb.ReadJobResultRequest(job_id=job.id, output=""))
)
# Resumed part-way: the rows from start_row on.
resumed_rows, _, _ = summed(
    service.ReadJobResult(
        pb.ReadJobResultRequest(job_id=job.id, output="", start_row=rows - 1234)
    )
)

client = flight.connect(f"grpc://{address}")
info = client.get_flight_info(flight.FlightDescriptor.for_path(job.id, ""))
table = client.do_get(flight.Ticket(f"{job.id}/".encode())).read_all()

print(
    json.dumps(
        {
            "stream_rows": stream_rows,
            "stream_sum": stream_sum,
            "stream_columns": stream_columns,
            "stream_seconds": stream_seconds,
            "inline_rows": len(inline.rows),
            "inline_truncated": inline.truncated,
            "total_rows": inline.total_rows,
            "read_rows": read_rows,
            "read_sum": read_sum,
            "resumed_rows": resumed_rows,
            "flight_total_records": info.total_records,
            "flight_schema": [f"{f.name}:{f.type}" for f in table.schema],
            "flight_rows": table.num_rows,
            "flight_sum": compute.sum(table.column("num")).as_py(),
        }
    )
)
