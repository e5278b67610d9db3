"""A local S3 for trying the jobs without a cloud: moto in server mode on 127.0.0.1.

    python infra/local/moto_s3.py --port 5000 --bucket corpus --upload ../shared/datasets/kodak
    export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    python -m jobs.archive --input s3://corpus/kodak --output s3://corpus/archive
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--bucket", default="corpus")
    p.add_argument("--upload", help="a local folder to upload under s3://<bucket>/<folder name>/")
    args = p.parse_args()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port)
    server.start()
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{args.port}", aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    s3.create_bucket(Bucket=args.bucket)
    if args.upload:
        folder = Path(args.upload)
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                s3.upload_file(str(f), args.bucket, f"{folder.name}/{f.relative_to(folder)}")
    print(f"S3 on http://127.0.0.1:{args.port}, bucket {args.bucket}; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
