"""A small Python client for the hinn REST API (httpx + numpy; no torch, no hinn_core).

    from hinn_client import Client
    with Client("http://127.0.0.1:8000") as hinn:
        job = hinn.wait(hinn.train("spring-hinn", dataset={"system": "spring"}))
        pred = hinn.predict("spring-hinn", q0=[1.0], p0=[0.0], t_end=10.0, dt=0.1)
"""

from hinn_client.client import Client, HinnAPIError, HinnError, JobFailed, Prediction

__all__ = ["Client", "HinnAPIError", "HinnError", "JobFailed", "Prediction"]
__version__ = "0.1.0"
