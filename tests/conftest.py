import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODELS = ROOT / "models"


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while (r := client.get("/readyz")).status_code != 200:
        assert time.time() < deadline, r.text
        time.sleep(0.05)


@pytest.fixture(scope="session")
def client(tmp_path_factory):
    """The real app over the bundled models, with an empty gallery, ready."""
    data = tmp_path_factory.mktemp("gallery")
    with TestClient(create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=data))) as c:
        wait_ready(c)
        yield c
