"""bench.prices: list prices as data, and one camera-day's cost computed by hand."""

from __future__ import annotations

import json

import pytest

from bench.prices import GB, PRICES, SOURCE, cost_per_camera_day


def test_prices_are_data_with_units_and_a_dated_source():
    for name, entry in PRICES.items():
        assert entry["usd"] > 0 and entry["unit"] and entry["service"], name
    assert "us-east-1" in SOURCE and "2025" in SOURCE
    assert "aws.amazon.com/kinesis/video-streams/pricing" in SOURCE
    assert PRICES["kvs_consumed_gb"]["usd"] == 0.0085
    assert PRICES["dynamodb_write_units_million"]["usd"] == 0.625


def test_one_camera_day_by_hand():
    day_gb = GB / 24  # bytes per hour that make 1 GB a day
    result = cost_per_camera_day(
        {"kinesis-video-media:GetMedia": 1, "kinesisvideo:GetDataEndpoint": 1,
         "kinesis:PutRecords": 50, "s3:PutObject": 3600, "s3:GetObject": 100,
         "dynamodb:UpdateItem": 1000, "dynamodb:TransactWriteItems": 500,
         "dynamodb:GetItem": 100, "dynamodb:DescribeTable": 7},
        {"kinesisvideo:PutMedia": day_gb, "kinesis-video-media:GetMedia": 2 * day_gb,
         "kinesis:records": 3600 * 30_000, "s3:PutObject": day_gb},
        records_per_hour=3600)
    usd = result["usd_per_day"]
    assert usd["kvs_ingested_gb"] == pytest.approx(0.0085)  # 1 GB
    assert usd["kvs_consumed_gb"] == pytest.approx(0.017)  # 2 GB: two readers
    # 24 h retained = 1 GB held all day = 24/730 GB-month
    assert usd["kvs_storage_gb_month"] == pytest.approx(0.023 * 24 / 730)
    # 30,000 B records = 2 payload units of 25 KiB; 3600/h -> 172,800 units a day
    assert usd["kds_put_payload_units_million"] == pytest.approx(0.1728 * 0.014)
    # 30,000 B/s of a shard's 1 MiB/s binds before 1 of its 1000 records/s
    assert usd["kds_shard_hour"] == pytest.approx(30_000 / 1_048_576 * 24 * 0.015)
    assert usd["s3_put_requests_thousand"] == pytest.approx(86.4 * 0.005)
    assert usd["s3_get_requests_thousand"] == pytest.approx(2.4 * 0.0004)
    assert usd["s3_storage_gb_month"] == pytest.approx(30 * 24 / 730 * 0.023)  # 30 days kept
    # UpdateItem 1 WRU, TransactWriteItems 2: 2000/h -> 48,000 a day; DescribeTable free
    assert usd["dynamodb_write_units_million"] == pytest.approx(0.048 * 0.625)
    assert usd["dynamodb_read_units_million"] == pytest.approx(0.0024 * 0.125)
    total = (0.0085 + 0.017 + 0.023 * 24 / 730 + 0.1728 * 0.014
             + 30_000 / 1_048_576 * 24 * 0.015 + 0.432 + 0.00096 + 30 * 24 / 730 * 0.023
             + 0.03 + 0.0003)
    assert result["total_usd_per_day"] == pytest.approx(total)
    by_service = result["usd_per_day_by_service"]
    assert by_service["S3"] == pytest.approx(0.432 + 0.00096 + 30 * 24 / 730 * 0.023)
    assert sum(by_service.values()) == pytest.approx(total)
    assert any("30000 B -> 2 unit(s)" in a for a in result["assumptions"])
    json.dumps(result)  # plain data


def test_a_naive_camera_one_record_per_put_record_call():
    result = cost_per_camera_day({"kinesis:PutRecord": 7200, "s3:PutObject": 7200},
                                 {"kinesis:records": 7200 * 3000})
    usd = result["usd_per_day"]
    # 3000 B records round up to one unit each: 172,800 units a day
    assert usd["kds_put_payload_units_million"] == pytest.approx(0.1728 * 0.014)
    # 6000 B/s of a shard's 1 MiB/s (0.57 %) binds before 2 of its 1000 records/s (0.2 %)
    assert usd["kds_shard_hour"] == pytest.approx(6000 / 1_048_576 * 24 * 0.015)
    assert usd["s3_put_requests_thousand"] == pytest.approx(172.8 * 0.005)
    assert usd["kvs_consumed_gb"] == 0 and usd["dynamodb_write_units_million"] == 0


def test_put_records_needs_the_record_count():
    with pytest.raises(ValueError, match="records_per_hour"):
        cost_per_camera_day({"kinesis:PutRecords": 10}, {"kinesis:records": 1000})


def test_nothing_costs_nothing():
    result = cost_per_camera_day({}, {})
    assert result["total_usd_per_day"] == 0
