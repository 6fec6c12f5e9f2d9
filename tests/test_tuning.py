"""Process-level tuning at import: applied by default, user settings win, and it can be off."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, dualnet; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT')); "
         "print(os.environ.get('OMP_WAIT_POLICY')); print('|'.join(dualnet._tuning.APPLIED))")


def _probe(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "DUALNET_NO_TUNING")
             and not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0], out[1], out[2]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc setting is glibc's")
def test_defaults_are_applied_when_dualnet_loads():
    timeout, policy, applied = _probe()
    assert policy == "PASSIVE"
    assert applied.startswith("OMP_WAIT_POLICY=PASSIVE|") and "not in effect" not in applied
    assert "glibc malloc keeps freed memory" in applied
    # BLAS is left alone: dualnet's own products never wake its threads (dualnet._threads)
    assert timeout == "None"


def test_user_settings_win():
    _, policy, applied = _probe(OMP_WAIT_POLICY="ACTIVE", MALLOC_TRIM_THRESHOLD_="1000")
    assert policy == "ACTIVE"
    # malloc is left as the user set it
    assert applied == "OMP_WAIT_POLICY=ACTIVE"


def test_dualnet_no_tuning_turns_everything_off():
    timeout, policy, applied = _probe(DUALNET_NO_TUNING="1")
    assert timeout == "None" and policy == "None" and applied == ""
