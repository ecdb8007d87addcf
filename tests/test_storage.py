"""Safe names and the storage layout."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from docintel.core.storage import Storage, safe_name


@given(st.text(max_size=600))
def test_safe_name_is_always_one_harmless_path_component(name: str) -> None:
    safe = safe_name(name)
    assert safe and "/" not in safe and "\\" not in safe
    assert ".." not in safe
    assert not safe.startswith((".", " "))
    assert all(ch.isprintable() for ch in safe)
    assert len(safe.encode("utf-8")) <= 150


@given(st.text(max_size=300))
def test_safe_names_stay_inside_the_uploads_folder(tmp_path_factory, name: str) -> None:
    root = tmp_path_factory.mktemp("store")
    storage = Storage(root)
    path = storage.path_for("doc1", safe_name(name))
    assert path.parent == (root / "uploads" / "doc1").resolve()


def test_safe_name_keeps_ordinary_names_and_extensions() -> None:
    assert safe_name("Quarterly Memo.txt") == "Quarterly Memo.txt"
    assert safe_name("../../etc/passwd.txt") == "passwd.txt"
    assert safe_name("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert safe_name("名前.pdf") == "名前.pdf"
    assert safe_name("") == "document"
    assert safe_name("....pdf").endswith(".pdf")
    long = safe_name("a" * 500 + ".pdf")
    assert long.endswith(".pdf") and len(long) <= 150


def test_sweep_removes_folders_without_a_document(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.prepare()
    (storage.uploads / "known").mkdir()
    (storage.uploads / "orphan").mkdir()
    (storage.incoming / "part-x").write_bytes(b"half")
    assert storage.sweep({"known"}) == ["orphan"]
    storage.prepare()
    assert list(storage.incoming.iterdir()) == []
    assert [p.name for p in storage.uploads.iterdir()] == ["known"]
