"""Storage URIs, filesystems against a real S3 API (moto server), and retries of transient errors."""
from __future__ import annotations

import os

import pytest

from physiofm.data import storage
from physiofm.data.storage import RetryPolicy, StorageError, is_transient, retry


def test_uri_helpers(tmp_path):
    assert storage.is_remote("s3://bucket/key") and not storage.is_remote(str(tmp_path))
    assert storage.join("s3://bucket/a/", "b", "c.edf") == "s3://bucket/a/b/c.edf"
    assert storage.join(str(tmp_path), "x") == os.path.join(str(tmp_path), "x")
    assert storage.strip_scheme("s3://bucket/key/") == "bucket/key"
    assert storage.strip_scheme(f"file://{tmp_path}") == str(tmp_path)
    with pytest.raises(ValueError, match=r"unsupported URI scheme 'gs'.*allowed: \('file', 's3'\)"):
        storage.is_remote("gs://bucket/key")


@pytest.mark.parametrize("error, transient", [
    (TimeoutError("read timed out"), True),
    (ConnectionResetError("peer reset"), True),
    (OSError("An error occurred (SlowDown) when calling GetObject: Please reduce your request rate"), True),
    (OSError("An error occurred (503) Service Unavailable"), True),
    (OSError("An error occurred (InternalError): We encountered an internal error"), True),
    (FileNotFoundError("bucket/key"), False),
    (PermissionError("AccessDenied"), False),
    (ValueError("bad EDF header"), False),
])
def test_transient_errors_are_told_from_permanent_ones(error, transient):
    assert is_transient(error) is transient


def test_retry_backs_off_then_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset")
        return "payload"

    policy = RetryPolicy(attempts=5, first_delay_s=0.5, max_delay_s=0.8)
    assert retry(flaky, policy, sleep=sleeps.append) == "payload"
    assert len(calls) == 3 and sleeps == [0.5, 0.8]  # doubled, then capped


def test_retry_gives_up_with_the_error_text_and_never_retries_permanent_errors():
    sleeps = []
    with pytest.raises(StorageError, match=r"read x: still failing after 3 attempts: TimeoutError: slow"):
        retry(lambda: (_ for _ in ()).throw(TimeoutError("slow")), RetryPolicy(attempts=3, first_delay_s=0.1),
              what="read x", sleep=sleeps.append)
    assert sleeps == [0.1, 0.2]
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        retry(missing, RetryPolicy(attempts=5), sleep=sleeps.append)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        RetryPolicy(attempts=0)


def test_unreachable_endpoint_is_retried_then_reported(s3_endpoint):  # fake credentials in the env
    policy = RetryPolicy(attempts=2, first_delay_s=0.01)
    with pytest.raises(StorageError, match=r"still failing after 2 attempts: EndpointConnectionError"):
        storage.read_bytes("s3://bucket/x.edf", policy, endpoint_url="http://127.0.0.1:9", skip_instance_cache=True,
                           config_kwargs={"connect_timeout": 1, "retries": {"max_attempts": 1}})


def test_s3_round_trip_through_fsspec_and_pyarrow(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "corpus", "a", "rec.hea")
    storage.write_bytes(uri, b"100 2 360 650000\n")
    storage.write_bytes(storage.join(s3_bucket, "corpus", "b.edf"), b"0" * 256)
    assert storage.exists(uri) and not storage.exists(storage.join(s3_bucket, "nothing"))
    assert storage.walk(storage.join(s3_bucket, "corpus")) == {
        f"{s3_bucket}/corpus/a/rec.hea": 17, f"{s3_bucket}/corpus/b.edf": 256}
    pa_fs, path = storage.pyarrow_filesystem(uri)  # endpoint from AWS_ENDPOINT_URL, as pyarrow would not
    with pa_fs.open_input_stream(path) as stream:
        assert stream.read() == b"100 2 360 650000\n"
    with storage.local_files([uri]) as (local,):
        assert open(local, "rb").read() == b"100 2 360 650000\n"
    assert not os.path.exists(local)  # the temporary copy is gone
    wrapped, _ = storage.pyarrow_filesystem(uri, via_fsspec=True)
    assert wrapped.get_file_info(path).size == 17
    (tmp_path / "local.txt").write_bytes(b"x")
    assert storage.walk(str(tmp_path)) == {str(tmp_path / "local.txt"): 1}
    with pytest.raises(FileNotFoundError, match="input not found"):
        storage.walk(str(tmp_path / "absent"))
