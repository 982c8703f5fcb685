"""Checks at start, before any model loads: the outputs the consumer writes to exist and these
credentials may reach them. A missing data stream or bucket would otherwise fail every batch
(ResourceNotFoundException, NoSuchBucket) and never checkpoint; here it is one message naming
what is missing and where, and the consumer exits 3.

One cheap call per output, each one the consumer's IAM policy already grants for its own work
(infra/iam/consumer-policy.json): ListShards on the data stream (the read-back on resume uses
it), HeadBucket (s3:ListBucket) on the bucket. The lease table is created by the supervisor.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

NOT_FOUND = {"ResourceNotFoundException", "NoSuchBucket", "404", "NotFound"}
DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden"}
BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId",
                   "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
                   "InvalidSignatureException"}


class SetupProblem(Exception):
    """An output that is missing or cannot be reached; the message names it and where."""


def check_outputs(kinesis, data_stream: str, s3=None, bucket: str | None = None) -> None:
    """Raise SetupProblem naming every output that is missing, or the first that fails."""
    missing = []
    checks = [("the Kinesis data stream", data_stream, "outputs.kinesis.stream", kinesis,
               lambda: kinesis.list_shards(StreamName=data_stream, MaxResults=1),
               "kinesis:ListShards")]
    if s3 is not None and bucket is not None:
        checks.append(("the S3 bucket", bucket, "outputs.s3.bucket", s3,
                       lambda: s3.head_bucket(Bucket=bucket), "s3:ListBucket"))
    for what, name, key, client, call, permission in checks:
        where = _where(client)
        try:
            call()
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in NOT_FOUND:
                missing.append(f"{what} {name!r} ({key}) does not exist {where}")
            elif code in BAD_CREDENTIALS:
                raise SetupProblem(f"the AWS credentials were refused {where}: {err}") from None
            elif code in DENIED:
                raise SetupProblem(f"{key} {name!r}: not allowed to check it {where} "
                                   f"({permission}; see infra/iam/consumer-policy.json)") \
                    from None
            else:
                raise SetupProblem(f"{key} {name!r}: {err}") from None
        except BotoCoreError as err:  # unreachable endpoint, no credentials, timeouts
            raise SetupProblem(f"{key} {name!r}: cannot check it {where}: {err}") from None
    if missing:
        them = "them" if len(missing) > 1 else "it"
        raise SetupProblem("; ".join(missing) + f": create {them}, or fix the configuration "
                           "(on the local stack: python -m infra.local --create-resources)")


def _where(client) -> str:
    meta = client.meta
    if "amazonaws.com" in meta.endpoint_url:
        return f"in {meta.region_name}"
    return f"at {meta.endpoint_url}"
