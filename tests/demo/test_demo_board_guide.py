"""``pilotline demo`` prints the board's address and the demo's tokens to sign in with
(issue 16). The demo run itself, signing in with what it printed:
tests/integration/test_cli.py::test_demo_runs_a_simulated_line_and_prints_the_final_table."""

from __future__ import annotations

from pathlib import Path

from pilotline.demo.board_guide import board_guide


def test_the_guide_names_the_board_and_each_token(tmp_path: Path) -> None:
    tokens = {"operator": tmp_path / "operator.token", "tenant demo-smallco": tmp_path / "t.token"}
    tokens["operator"].write_text("plt_op\n")
    tokens["tenant demo-smallco"].write_text("plt_tenant\n")

    lines = board_guide("127.0.0.1:8080", tokens)

    assert lines == [
        "board: http://127.0.0.1:8080/board (sign in with one of these tokens)",
        f"  operator             plt_op   ({tokens['operator']})",
        f"  tenant demo-smallco  plt_tenant   ({tokens['tenant demo-smallco']})",
    ]
