"""Process-level tuning at import: applied by default, user settings win, and it can be off."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, dualnet; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT')); "
         "print('|'.join(dualnet._tuning.APPLIED))")


def _probe(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "DUALNET_NO_TUNING")
             and not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0], out[1]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc setting is glibc's")
def test_defaults_are_applied_when_dualnet_loads_first():
    timeout, applied = _probe()
    assert timeout == "4"
    assert "OPENBLAS_THREAD_TIMEOUT=4|" in applied and "not in effect" not in applied
    assert "glibc malloc keeps freed memory" in applied


def test_user_settings_win():
    timeout, applied = _probe(OPENBLAS_THREAD_TIMEOUT="9", MALLOC_TRIM_THRESHOLD_="1000")
    assert timeout == "9"
    # malloc is left as the user set it
    assert applied == "OPENBLAS_THREAD_TIMEOUT=9|OMP_WAIT_POLICY=PASSIVE"


def test_dualnet_no_tuning_turns_everything_off():
    timeout, applied = _probe(DUALNET_NO_TUNING="1")
    assert timeout == "None" and applied == ""
