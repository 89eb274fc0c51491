"""mlx-pn serve's own flags: a bad value is a one-line error naming the flag, before anything is loaded."""

import pytest

from mlx_pn.recipes import serve


@pytest.mark.parametrize("argv,says", [
    (["--expert-cache", "0"], "--expert-cache 0: keep at least 1 materialised expert"),
    (["--ensemble", "3"], "argument --ensemble: invalid choice: 3"),
    (["--min-confidence", "1.5"], "--min-confidence 1.5: must be between 0 and 1")])
def test_bad_serve_flags_exit_with_one_line(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        serve.main(["--out", str(tmp_path), *argv])
    assert e.value.code == 2 and says in capsys.readouterr().err
