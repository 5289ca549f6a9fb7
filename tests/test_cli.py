import pytest

from worker.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "dev" in out and "worker" in out


def test_invalid_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEQ2GMM_BATCHING__LINGER_MS", "-5")
    assert main(["dev", "status"]) == 2
    assert "SEQ2GMM_BATCHING__LINGER_MS" in capsys.readouterr().err


def test_missing_services_give_an_actionable_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("SEQ2GMM_DEV__DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    assert main(["worker"]) == 1
    assert "seq2gmm dev up" in capsys.readouterr().err
