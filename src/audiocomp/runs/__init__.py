"""Run directories and the atomic file I/O every stage writes through.

``atomic`` writes files so a crash leaves the old version intact, ``folder`` is the run folder with its
manifest and lock, ``metadata`` what a manifest records, ``crash`` the fault injection the crash tests use.
"""
from .atomic import (RunError, append_jsonl, atomic_copy, atomic_path, atomic_save_npy, atomic_write_bytes,
                     atomic_write_csv, atomic_write_json, atomic_write_text, read_json)
from .crash import CRASH_ENV, crash_point
from .folder import DEFAULT_RUNS_DIR, Run, check_name, refuse_links, runs_root
from .metadata import file_sha256, git_commit, package_versions

__all__ = ["CRASH_ENV", "DEFAULT_RUNS_DIR", "Run", "RunError", "append_jsonl", "atomic_copy", "atomic_path",
           "atomic_save_npy", "atomic_write_bytes", "atomic_write_csv", "atomic_write_json", "atomic_write_text",
           "check_name", "crash_point", "file_sha256", "git_commit", "package_versions", "read_json",
           "refuse_links", "runs_root"]
