import hashlib

from core.files.digest import bytes_digest, file_digest, sha256_file


def test_file_digests_read_the_whole_file_in_chunks(tmp_path):
    data = bytes(range(256)) * 5000  # over one 1 MB chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_digest(path) == bytes_digest(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
