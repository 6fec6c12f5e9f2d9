"""Process-level tuning at import: applied by default, user settings win, and it can be off."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, dualnet; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT')); "
         "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT')); "
         "print('|'.join(dualnet._tuning.APPLIED))")
OURS = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "DUALNET_NO_TUNING")


def _probe(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in OURS and not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0], out[1], out[2]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc setting is glibc's")
def test_defaults_are_applied_when_dualnet_loads():
    timeout, waiting, applied = _probe()
    assert waiting == "PASSIVE 10000"
    assert applied.startswith("OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000|")
    assert "not in effect" not in applied
    assert "glibc malloc keeps freed memory" in applied
    # BLAS is left alone: dualnet's own products never wake its threads (dualnet._threads)
    assert timeout == "None"


@pytest.mark.parametrize("setting", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}])
def test_user_settings_win(setting):
    _, waiting, applied = _probe(MALLOC_TRIM_THRESHOLD_="1000", **setting)
    assert waiting == " ".join(setting.get(k, "None") for k in ("OMP_WAIT_POLICY",
                                                                 "GOMP_SPINCOUNT"))
    # neither waiting variable is added to the user's, and malloc is left as the user set it
    assert applied == " ".join(f"{k}={v}" for k, v in setting.items())


def test_dualnet_no_tuning_turns_everything_off():
    timeout, waiting, applied = _probe(DUALNET_NO_TUNING="1")
    assert timeout == "None" and waiting == "None None" and applied == ""
