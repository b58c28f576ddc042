"""A procgate client in Python: a sync call, then a job followed live.

Stubs are generated from ../../proto by run.sh (grpcio-tools); run it as
    examples/python/run.sh 127.0.0.1:50051
against a server that has docs/examples/postgres loaded (the demo's, or
`procgate serve` without --database-url).
"""

import argparse
import sys

import grpc

from procgate.v1 import procgate_pb2 as pb
from procgate.v1 import procgate_pb2_grpc as rpc


def value(**kind):
    return pb.Value(**kind)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", help="host:port of procgate")
    parser.add_argument("--token", help="bearer token, if the server wants one")
    args = parser.parse_args()

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.server) as channel:
        stub = rpc.ProcedureServiceStub(channel)

        # A sync call: exact decimals in, OUT parameters back.
        response = stub.ExecuteSync(
            pb.ExecuteSyncRequest(
                call=pb.ProcedureCall(
                    procedure="pkg_etl.sumar",
                    params=[
                        pb.Param(name="a", value=value(number_value="12.50")),
                        pb.Param(name="b", value=value(number_value="0.75")),
                    ],
                )
            ),
            metadata=metadata,
            timeout=10,
        )
        total = response.outputs["total"].number_value
        print(f"sumar: total = {total}")
        if total != "13.25":
            return 1

        # A job, followed with WatchJob until it ends.
        job = stub.SubmitAsync(
            pb.SubmitAsyncRequest(
                call=pb.ProcedureCall(
                    procedure="pkg_etl.proceso_largo",
                    params=[
                        pb.Param(name="p_fecha", value=value(date_value="2024-05-01")),
                        pb.Param(name="p_pasos", value=value(integer_value=3)),
                        pb.Param(name="p_pausa_ms", value=value(integer_value=200)),
                    ],
                )
            ),
            metadata=metadata,
        )
        print(f"submitted job {job.id}")
        last = None
        for snapshot in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=metadata):
            state = pb.JobState.Name(snapshot.state).removeprefix("JOB_STATE_")
            print(f"  {state:<9} {snapshot.progress:>3}% {snapshot.progress_message}")
            last = snapshot
        if last is None or last.state != pb.JOB_STATE_COMPLETED:
            print("the job did not complete", file=sys.stderr)
            return 1
        print(f"result: {last.outputs['p_resultado'].string_value}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
