"""The original's stack, for the benchmark: FastAPI + psycopg 3.1 AsyncConnectionPool + Pydantic.

Written the way the original service (and most FastAPI users) write it: a module-level pool opened
in the lifespan handler, a Pydantic response model, one `async with pool.connection()` per request.
Only `GET /user/{id}` is served; that is the benchmarked route.

Configuration: POSTGRES_DB_HOST, POSTGRES_DB_PORT (default 5432), POSTGRES_DB_NAME,
POSTGRES_DB_USER, POSTGRES_DB_PASSWORD; run with one worker:

    uvicorn app:app --host 127.0.0.1 --port "$PORT" --workers 1 --no-access-log
or  PORT=8003 python app.py
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel


class Record(BaseModel):
    id: int
    email: str
    text: str | None = None


def conninfo() -> str:
    return (
        f"host={os.environ['POSTGRES_DB_HOST']} "
        f"port={os.environ.get('POSTGRES_DB_PORT', '5432')} "
        f"dbname={os.environ['POSTGRES_DB_NAME']} "
        f"user={os.environ['POSTGRES_DB_USER']} "
        f"password={os.environ['POSTGRES_DB_PASSWORD']}"
    )


pool = AsyncConnectionPool(conninfo(), min_size=1, max_size=16, open=False)


@asynccontextmanager
async def lifespan(app: FastAPI):
    await pool.open()
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/user/{id}", response_model=Record)
async def get_user(id: int) -> Record:
    async with pool.connection() as conn:
        async with conn.cursor(row_factory=class_row(Record)) as cur:
            await cur.execute("SELECT id, email, text FROM records WHERE id = %s", (id,))
            record = await cur.fetchone()
    if record is None:
        raise HTTPException(status_code=404, detail=f"Record with ID {id} was not found!")
    return record


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8003")),
        workers=1,
        access_log=False,
    )
