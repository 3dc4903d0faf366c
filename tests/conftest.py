import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"                    # what make run serves: the real pretrained models only
SYNTHETIC = MODELS / "synthetic"            # the project's own models, trained on synthetic data:
                                            # detector, segmenter and the three face models
# the synthetic stack in front of the real models: what the serving tests below were written against
# (small, fast models whose behaviour on synthetic scenes and faces the tests know)
BUNDLED_MODELS = Path(f"{SYNTHETIC}{os.pathsep}{MODELS}")


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
