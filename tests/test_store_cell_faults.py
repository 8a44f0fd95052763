"""A bit flipped inside one cell of the state database passes SQLite's own checks: the JSON an
item's history row or the last item keeps may be damaged. It costs that item's details only:
the report runs, the agent's state is built, the counts stay."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from bin_agent.cli import main
from bin_agent.store import Store, StoreReader
from tests.helpers import base_config, write_toml
from tests.test_report import add


def test_a_damaged_json_cell_costs_only_its_items_details(tmp_path, capsys):
    config_file = write_toml(tmp_path / "bin.toml", base_config(tmp_path))
    path = tmp_path / "state" / "bin-agent.db"
    store = Store(path)
    now = datetime.now(UTC)
    for label, compartment in (("glass", "glass"), ("paper", "paper"), ("metal", "residual")):
        add(store, now - timedelta(hours=1), label, compartment)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute('UPDATE items SET payload = \'{"time": "2026-1\' WHERE seq = (SELECT min(seq) FROM items)')
        db.execute("UPDATE meta SET value = '{bad' WHERE key = 'last_item'")
    db.close()

    assert main(["report", "--config", str(config_file), "--since", "1d"]) == 0
    assert "3 items" in capsys.readouterr().out
    assert StoreReader(path).last_item() is None
    store = Store(path)
    try:
        assert store.last_item() is None, "the state message is built without it, not skipped"
        assert store.counts().total == 3
        assert len(store.history((now - timedelta(days=1)).isoformat())) == 3
    finally:
        store.close()
