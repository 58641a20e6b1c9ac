import socket
import time

import pytest

from lightning_modules.runtime import run_dir_name, stable_id, wandb_offline_reason


def test_run_dir_names_are_stable_and_safe_to_pass_back_on_the_command_line():
    name = run_dir_name(None, "data.data_dir=/x/y,experiment=ddpm_digits,seed=3")
    assert name == "data.data_dir-_x_y__experiment-ddpm_digits__seed-3"
    assert run_dir_name(None, "experiment=a") == run_dir_name(None, "experiment=a")
    assert run_dir_name("demo", "experiment=a") == "demo" and run_dir_name(None, "") == "default"
    assert stable_id("/runs/a") == stable_id("/runs/a") != stable_id("/runs/b")


@pytest.fixture
def wandb_server(monkeypatch):
    """A local stand-in for the W&B server (WANDB_BASE_URL): a listening socket; never the network."""
    for variable in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        yield server


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path, wandb_server):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_offline_reason() == "no W&B API key found"
    (tmp_path / ".netrc").write_text("machine 127.0.0.1\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)  # what `wandb login` writes
    assert wandb_offline_reason() is None
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert wandb_offline_reason() is None
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's own choice is kept
    assert wandb_offline_reason() is None


def test_wandb_with_a_key_but_no_server_goes_offline_within_seconds(monkeypatch, wandb_server):
    monkeypatch.setenv("WANDB_API_KEY", "x")
    port = wandb_server.getsockname()[1]
    wandb_server.close()  # nothing listens there now: refused at once
    assert wandb_offline_reason().startswith(f"the W&B server 127.0.0.1:{port} is unreachable (")
    monkeypatch.setenv("WANDB_BASE_URL", "https://10.255.255.1")  # a host that never answers (routed nowhere)
    monkeypatch.setattr(socket, "create_connection", lambda *args, timeout: time.sleep(timeout + 5))
    start = time.monotonic()
    assert wandb_offline_reason(timeout=0.2) == "the W&B server 10.255.255.1:443 is unreachable (no answer in 0.2 s)"
    assert time.monotonic() - start < 1


def test_sweep_dir_names_come_from_the_whole_command_without_the_knobs_that_leave_runs_alone():
    from lightning_modules.runtime import sweep_dir_name

    excluded = ["trainer.max_steps", "run_name"]
    name = sweep_dir_name(None, ["seed=1,2,3", "experiment=ddpm_digits", "trainer.max_steps=2"], excluded)
    assert name == "experiment-ddpm_digits__seed-1+2+3"
    assert sweep_dir_name(None, ["experiment=ddpm_digits", "seed=1,2,3"], excluded) == name  # order-free
    assert sweep_dir_name("lr_sweep", ["seed=1,2"], excluded) == "lr_sweep"
