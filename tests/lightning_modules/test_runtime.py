from lightning_modules.runtime import run_dir_name, stable_id, wandb_needs_offline


def test_run_dir_names_are_stable_and_safe_to_pass_back_on_the_command_line():
    name = run_dir_name(None, "data.data_dir=/x/y,experiment=ddpm_digits,seed=3")
    assert name == "data.data_dir-_x_y__experiment-ddpm_digits__seed-3"
    assert run_dir_name(None, "experiment=a") == run_dir_name(None, "experiment=a")
    assert run_dir_name("demo", "experiment=a") == "demo" and run_dir_name(None, "") == "default"
    assert stable_id("/runs/a") == stable_id("/runs/a") != stable_id("/runs/b")


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path):
    for variable in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_needs_offline()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)  # what `wandb login` writes
    assert not wandb_needs_offline()
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert not wandb_needs_offline()


def test_sweep_dir_names_come_from_the_whole_command_without_the_knobs_that_leave_runs_alone():
    from lightning_modules.runtime import sweep_dir_name

    excluded = ["trainer.max_steps", "run_name"]
    name = sweep_dir_name(None, ["seed=1,2,3", "experiment=ddpm_digits", "trainer.max_steps=2"], excluded)
    assert name == "experiment-ddpm_digits__seed-1+2+3"
    assert sweep_dir_name(None, ["experiment=ddpm_digits", "seed=1,2,3"], excluded) == name  # order-free
    assert sweep_dir_name("lr_sweep", ["seed=1,2"], excluded) == "lr_sweep"
