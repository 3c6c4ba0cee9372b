"""Tasks: a FastAPI JSON API with the OAuth2 password flow, as FastAPI's tutorial builds it.

``POST /token`` takes the OAuth2 password form (``OAuth2PasswordRequestForm``) and answers
a JWT (PyJWT, HS256) that every other call sends as ``Authorization: Bearer``. Data lives
in PostgreSQL through SQLAlchemy 2's asyncio ORM on asyncpg: users and tasks with UUID
primary keys the app makes (``uuid.uuid4``) and ``created_at``/``updated_at`` timestamps.
Pydantic models validate bodies and shape answers (a bad body or id is FastAPI's 422).
After each change a background task (FastAPI's ``BackgroundTasks``) pushes an event to
the user's activity list in Redis (``redis.asyncio``). The schema is created at start-up
(``metadata.create_all`` in the lifespan).

Configuration (environment): ``DATABASE_URL`` (postgresql://...), ``REDIS_URL``,
``JWT_SECRET``. Served by uvicorn: ``uvicorn app:app --port 8000``.
``python app.py --add-user NAME`` (password from ``TASKS_PASSWORD``) creates the schema
and a user before the app runs.

Endpoints::

    POST  /token             form username, password -> {access_token, token_type}
    GET   /users/me          the signed-in user
    POST  /tasks             {title, priority?} -> 201 task
    GET   /tasks             the user's tasks, oldest first
    GET   /tasks/{id}        one task (404; 422 when id is not a UUID)
    PATCH /tasks/{id}        {title?, done?, priority?}
    GET   /activity          the user's last changes, from Redis
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
import redis.asyncio as aioredis
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JWT_SECRET = os.environ.get("JWT_SECRET", "")
TOKEN_MINUTES = 30


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


engine = create_async_engine(_async_url(os.environ.get("DATABASE_URL", "postgresql://localhost/tasks")))
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
cache = aioredis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    priority: Mapped[int] = mapped_column(default=3)
    done: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC),
                                                 onupdate=lambda: datetime.now(UTC))


class Token(BaseModel):
    access_token: str
    token_type: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    username: str


class TaskIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    priority: int = Field(default=3, ge=1, le=5)


class TaskPatch(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int | None = Field(default=None, ge=1, le=5)
    done: bool | None = None


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    title: str
    priority: int
    done: bool
    created_at: datetime
    updated_at: datetime


def hash_password(password: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 100_000).hex()
    return f"{salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(stored, hash_password(password, salt))


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await cache.aclose()
    await engine.dispose()


app = FastAPI(title="Tasks", lifespan=lifespan)
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


async def get_db():
    async with SessionLocal() as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]


async def current_user(token: Annotated[str, Depends(oauth2_scheme)], db: Db) -> User:
    unauthorized = HTTPException(status.HTTP_401_UNAUTHORIZED, "Could not validate credentials",
                                 headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
        user_id = uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, KeyError, ValueError):
        raise unauthorized from None
    user = await db.get(User, user_id)
    if user is None:
        raise unauthorized
    return user


Me = Annotated[User, Depends(current_user)]


async def record_activity(user_id: uuid.UUID, event: dict) -> None:
    """Runs after the answer is sent (BackgroundTasks): the last 20 changes per user."""
    key = f"activity:{user_id}"
    await cache.lpush(key, json.dumps(event))
    await cache.ltrim(key, 0, 19)


@app.post("/token")
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], db: Db) -> Token:
    user = (await db.execute(select(User).where(User.username == form.username))).scalar_one_or_none()
    if user is None or not verify_password(form.password, user.password_hash):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Incorrect username or password",
                            headers={"WWW-Authenticate": "Bearer"})
    now = datetime.now(UTC)
    token = jwt.encode({"sub": str(user.id), "iat": now, "exp": now + timedelta(minutes=TOKEN_MINUTES)},
                       JWT_SECRET, algorithm="HS256")
    return Token(access_token=token, token_type="bearer")


@app.get("/users/me")
async def read_me(user: Me) -> UserOut:
    return UserOut.model_validate(user)


@app.post("/tasks", status_code=status.HTTP_201_CREATED)
async def create_task(body: TaskIn, user: Me, db: Db, background: BackgroundTasks) -> TaskOut:
    task = Task(owner_id=user.id, **body.model_dump())
    db.add(task)
    await db.commit()
    background.add_task(record_activity, user.id, {"event": "created", "task": str(task.id)})
    return TaskOut.model_validate(task)


@app.get("/tasks")
async def list_tasks(user: Me, db: Db) -> list[TaskOut]:
    rows = await db.scalars(select(Task).where(Task.owner_id == user.id).order_by(Task.created_at))
    return [TaskOut.model_validate(t) for t in rows]


async def _owned(db: AsyncSession, user: User, task_id: uuid.UUID) -> Task:
    task = await db.get(Task, task_id)
    if task is None or task.owner_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Task not found")
    return task


@app.get("/tasks/{task_id}")
async def read_task(task_id: uuid.UUID, user: Me, db: Db) -> TaskOut:
    return TaskOut.model_validate(await _owned(db, user, task_id))


@app.patch("/tasks/{task_id}")
async def update_task(task_id: uuid.UUID, body: TaskPatch, user: Me, db: Db,
                      background: BackgroundTasks) -> TaskOut:
    task = await _owned(db, user, task_id)
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(task, name, value)
    await db.commit()
    background.add_task(record_activity, user.id, {"event": "updated", "task": str(task.id)})
    return TaskOut.model_validate(task)


@app.get("/activity")
async def activity(user: Me) -> list[dict]:
    return [json.loads(e) for e in await cache.lrange(f"activity:{user.id}", 0, -1)]


async def add_user(username: str, password: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with SessionLocal() as db:
        db.add(User(username=username, password_hash=hash_password(password)))
        await db.commit()
    await engine.dispose()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add-user"]:
        asyncio.run(add_user(sys.argv[2], os.environ["TASKS_PASSWORD"]))
        sys.exit(0)
    sys.exit("serve with: uvicorn app:app (or python app.py --add-user NAME)")
