"""Stage download_fmnist: the four verified Fashion-MNIST IDX files into data/raw/fmnist."""

from pathlib import Path

from pipeline.config import load_params
from pipeline.data.fmnist_download import HttpLimits, fetch_fmnist
from stages.layout import RAW_FMNIST


def run(params_path: Path) -> None:
    p = load_params(params_path).download.fmnist
    fetch_fmnist(
        RAW_FMNIST,
        source=p.source,
        local_dir=p.local_dir,
        mirrors=p.mirrors,
        http=HttpLimits(
            retries=p.retries, backoff_s=p.backoff_s, timeout_s=p.timeout_s, deadline_s=p.deadline_s
        ),
    )
