"""Public AWS list prices (us-east-1) and the cost of one camera for one day.

The prices are data (`PRICES`), one entry per billed quantity, each with its unit and the pricing
page it comes from; update them there. They are US East (N. Virginia) on-demand list prices, no
free tier, no discounts, as published on the pages in `SOURCE` in 2025 (DynamoDB after AWS's
1 November 2024 cut of on-demand throughput prices by half). They were written down from those
pages, not fetched by this code (the machines that run it have no internet): check them before
quoting a figure.

Kinesis Data Streams is priced in PROVISIONED mode (shard-hours + PUT payload units): the mode a
fleet with a steady load runs in, and the one in which a record's size, not the number of API
calls, sets the cost. On-demand mode (per stream-hour and per GB) is not modelled.

`cost_per_camera_day(api_calls_per_hour, bytes_per_hour)` turns one camera's measured API calls
and bytes per hour into dollars per day, per line item and per service, and lists every
assumption it made in the result.
"""

from __future__ import annotations

import math
from typing import Any

SOURCE = ("AWS public list prices, us-east-1, on-demand, no free tier, as published in 2025 on "
          "https://aws.amazon.com/kinesis/video-streams/pricing/, "
          "https://aws.amazon.com/kinesis/data-streams/pricing/ (provisioned mode), "
          "https://aws.amazon.com/s3/pricing/ (S3 Standard) and "
          "https://aws.amazon.com/dynamodb/pricing/on-demand/ (after the 2024-11-01 price cut); "
          "written down by hand, not fetched: verify before quoting")
REGION = "us-east-1"

# USD per unit. GB = 2^30 bytes, as AWS bills; a month is 730 hours in AWS's price examples.
PRICES: dict[str, dict[str, Any]] = {
    "kvs_ingested_gb": {"usd": 0.0085, "unit": "GB of data ingested (PutMedia)",
                        "service": "Kinesis Video Streams"},
    "kvs_consumed_gb": {"usd": 0.0085, "unit": "GB of data consumed (GetMedia)",
                        "service": "Kinesis Video Streams"},
    "kvs_storage_gb_month": {"usd": 0.023, "unit": "GB-month stored",
                             "service": "Kinesis Video Streams"},
    "kds_shard_hour": {"usd": 0.015, "unit": "shard-hour (provisioned)",
                       "service": "Kinesis Data Streams"},
    "kds_put_payload_units_million": {"usd": 0.014,
                                      "unit": "million PUT payload units (25 KB each)",
                                      "service": "Kinesis Data Streams"},
    "s3_put_requests_thousand": {"usd": 0.005, "unit": "1,000 PUT/COPY/POST/LIST requests",
                                 "service": "S3"},
    "s3_get_requests_thousand": {"usd": 0.0004, "unit": "1,000 GET/HEAD requests",
                                 "service": "S3"},
    "s3_storage_gb_month": {"usd": 0.023, "unit": "GB-month, S3 Standard, first 50 TB",
                            "service": "S3"},
    "dynamodb_write_units_million": {"usd": 0.625, "unit": "million write request units "
                                     "(on-demand)", "service": "DynamoDB"},
    "dynamodb_read_units_million": {"usd": 0.125, "unit": "million read request units "
                                    "(on-demand)", "service": "DynamoDB"},
}

GB = 2 ** 30
HOURS_PER_MONTH = 730
KDS_PAYLOAD_UNIT_BYTES = 25 * 1024
KDS_SHARD_RECORDS_PER_S = 1000
KDS_SHARD_BYTES_PER_S = 1024 * 1024

# API operations (the "service:Operation" keys of consumer.cloud.aws.ApiCalls) by how they are billed.
S3_PUT_CLASS = ("PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2",
                "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
S3_GET_CLASS = ("GetObject", "HeadObject")
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem")  # 1 WRU each (items <= 1 KB)
DYNAMODB_TRANSACT_WRITES = ("TransactWriteItems",)  # 2 WRU each (one item <= 1 KB)
DYNAMODB_READS = ("GetItem", "Query", "Scan")  # 1 RRU each (strongly consistent, <= 4 KB)
KDS_RECORD_CALLS = ("PutRecord",)  # one record per call; PutRecords needs records_per_hour


def price(name: str) -> float:
    return float(PRICES[name]["usd"])


def _calls(api_calls: dict[str, float], service: str, operations: tuple[str, ...]) -> float:
    return sum(float(api_calls.get(f"{service}:{op}", 0.0)) for op in operations)


def cost_per_camera_day(api_calls_per_hour: dict[str, float], bytes_per_hour: dict[str, float],
                        *, records_per_hour: float | None = None,
                        kvs_retention_hours: float = 24.0,
                        s3_retention_days: float = 30.0) -> dict[str, Any]:
    """One camera's cost per day at the list prices in PRICES.

    api_calls_per_hour: "service:Operation" -> calls per hour (consumer.cloud.aws.ApiCalls keys).
    bytes_per_hour: bytes per hour under these keys (absent = 0):
      "kinesisvideo:PutMedia"             video ingested into KVS
      "kinesis-video-media:GetMedia"      video read out of KVS (every reader counts)
      "kinesis:records"                   the payload bytes of all records put to KDS
      "s3:PutObject"                      bytes written to S3 (kept s3_retention_days)
    records_per_hour: KDS records per hour; by default the PutRecord calls (one record each).
      Required when PutRecords was called, whose call count does not say how many records.

    Returns {"usd_per_day": {line item: $}, "usd_per_day_by_service": {service: $},
    "total_usd_per_day", "quantities_per_day": {line item: quantity}, "assumptions": [...],
    "prices": PRICES, "source": SOURCE}.
    """
    calls = {k: float(v) for k, v in api_calls_per_hour.items()}
    size = {k: float(v) for k, v in bytes_per_hour.items()}
    if records_per_hour is None:
        if calls.get("kinesis:PutRecords", 0.0) > 0:
            raise ValueError("PutRecords was called: pass records_per_hour (a PutRecords call "
                             "carries up to 500 records)")
        records_per_hour = _calls(calls, "kinesis", KDS_RECORD_CALLS)
    record_bytes_per_hour = size.get("kinesis:records", 0.0)
    mean_record = record_bytes_per_hour / records_per_hour if records_per_hour else 0.0
    units_per_record = max(1, math.ceil(mean_record / KDS_PAYLOAD_UNIT_BYTES))
    shard_share = max(records_per_hour / 3600 / KDS_SHARD_RECORDS_PER_S,
                      record_bytes_per_hour / 3600 / KDS_SHARD_BYTES_PER_S)
    ingested_gb_day = size.get("kinesisvideo:PutMedia", 0.0) * 24 / GB
    s3_bytes_day = size.get("s3:PutObject", 0.0) * 24

    quantities = {  # per day
        "kvs_ingested_gb": ingested_gb_day,
        "kvs_consumed_gb": size.get("kinesis-video-media:GetMedia", 0.0) * 24 / GB,
        # steady state: retention_hours of video stored at any time, billed per GB-month
        "kvs_storage_gb_month": (size.get("kinesisvideo:PutMedia", 0.0) * kvs_retention_hours
                                 / GB * 24 / HOURS_PER_MONTH),
        "kds_shard_hour": shard_share * 24,
        "kds_put_payload_units_million": records_per_hour * units_per_record * 24 / 1e6,
        "s3_put_requests_thousand": _calls(calls, "s3", S3_PUT_CLASS) * 24 / 1e3,
        "s3_get_requests_thousand": _calls(calls, "s3", S3_GET_CLASS) * 24 / 1e3,
        # steady state: s3_retention_days of objects stored at any time
        "s3_storage_gb_month": s3_bytes_day * s3_retention_days / GB * 24 / HOURS_PER_MONTH,
        "dynamodb_write_units_million": (_calls(calls, "dynamodb", DYNAMODB_WRITES)
                                         + 2 * _calls(calls, "dynamodb",
                                                      DYNAMODB_TRANSACT_WRITES)) * 24 / 1e6,
        "dynamodb_read_units_million": _calls(calls, "dynamodb", DYNAMODB_READS) * 24 / 1e6,
    }
    usd = {name: quantity * price(name) for name, quantity in quantities.items()}
    by_service: dict[str, float] = {}
    for name, dollars in usd.items():
        service = PRICES[name]["service"]
        by_service[service] = by_service.get(service, 0.0) + dollars
    assumptions = [
        (f"{REGION} list prices, on-demand, no free tier, no data transfer charges (the consumer "
         f"runs in the streams' region); GB = 2^30 bytes; a month = {HOURS_PER_MONTH} hours"),
        f"KVS storage: steady state with {kvs_retention_hours:g} h of video retained",
        ("KDS provisioned mode; shard-hours prorated by the camera's share of one shard's write "
         f"capacity ({KDS_SHARD_RECORDS_PER_S} records/s or 1 MiB/s, whichever binds: "
         f"{shard_share:.3g} of a shard), i.e. shards filled by many cameras; a small fleet "
         "still pays for whole shards"),
        (f"KDS PUT payload units from the mean record size ({mean_record:.0f} B -> "
         f"{units_per_record} unit(s) of 25 KB per record, every record assumed that size), "
         f"{records_per_hour:g} records/h; PutRecords batching does not change this cost"),
        ("KDS reads (GetRecords, shard iterators, ListShards) carry no request charge in "
         "provisioned mode; KVS control calls (GetDataEndpoint, ListStreams, ...) are free"),
        ("S3: PUT-class requests (PutObject, multipart parts, LIST) and GET-class (GetObject, "
         f"HeadObject) at S3 Standard prices; objects kept {s3_retention_days:g} days"),
        ("DynamoDB on-demand: PutItem/UpdateItem/DeleteItem 1 WRU each (items <= 1 KB, "
         "conditional failures still billed), TransactWriteItems 2 WRU, GetItem/Query/Scan "
         "1 RRU each (strongly consistent, <= 4 KB); DescribeTable/CreateTable free"),
    ]
    return {
        "usd_per_day": usd,
        "usd_per_day_by_service": by_service,
        "total_usd_per_day": sum(usd.values()),
        "quantities_per_day": quantities,
        "assumptions": assumptions,
        "prices": PRICES,
        "source": SOURCE,
    }
