"""Notes: a Flask app with a cookie session, an HTML login form and CSRF-protected forms.

Written the way Flask apps are: Flask-Login (the session cookie remembers who signed
in), Flask-WTF (every form carries a CSRF token tied to the session; a POST without the
right one gets 400), SQLAlchemy on PostgreSQL (users, notes), Redis (each user's recent
activity, a list). Passwords are stored as werkzeug hashes.

Configuration (environment): ``DATABASE_URL`` (postgresql://...), ``REDIS_URL``,
``SECRET_KEY`` (signs the session cookie), ``PORT`` (default 5000), ``HOST`` (default
127.0.0.1). ``python app.py --add-user EMAIL`` (password from ``NOTES_PASSWORD``) creates
the schema and a user, before the app is started; the app itself creates nothing.

Pages::

    GET  /login          the sign-in form (CSRF token in a hidden field)
    POST /login          email + password + csrf_token -> 302 /notes (or the form again, 401)
    GET  /notes          the user's notes and a form to add one   (signed in)
    POST /notes          title + body + csrf_token -> 302 /notes/<id>
    GET  /notes/<id>     one note (404 when not the user's)
    GET  /activity       the user's last actions, from Redis
    POST /logout         csrf_token -> 302 /login
"""

from __future__ import annotations

import os
import sys

import redis
from flask import Flask, abort, redirect, render_template, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf import FlaskForm
from jinja2 import DictLoader
from sqlalchemy import ForeignKey, String, Text, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length


class Base(DeclarativeBase):
    pass


class User(Base, UserMixin):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")


class LoginForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class NoteForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Body")


class LogoutForm(FlaskForm):
    pass


LAYOUT = """<!doctype html>
<html>
<head><title>Notes</title></head>
<body>
{% if current_user.is_authenticated %}<p class="who">Signed in as {{ current_user.email }}</p>{% endif %}
{% block content %}{% endblock %}
</body>
</html>
"""

LOGIN_PAGE = """{% extends "layout" %}{% block content %}
<h1>Sign in</h1>
{% if failed %}<p class="error">Wrong email or password.</p>{% endif %}
<form method="post" action="/login">
  {{ form.csrf_token }}
  <label>Email {{ form.email() }}</label>
  <label>Password {{ form.password() }}</label>
  <button type="submit">Sign in</button>
</form>
{% endblock %}"""

NOTES_PAGE = """{% extends "layout" %}{% block content %}
<h1>Your notes</h1>
<ul>
{% for note in notes %}  <li><a href="/notes/{{ note.id }}">{{ note.title }}</a></li>
{% else %}  <li>No notes yet.</li>
{% endfor %}</ul>
<form method="post" action="/notes">
  {{ form.csrf_token }}
  <label>Title {{ form.title() }}</label>
  <label>Body {{ form.body() }}</label>
  <button type="submit">Add</button>
</form>
<form method="post" action="/logout">{{ logout.csrf_token }}<button>Sign out</button></form>
{% endblock %}"""

NOTE_PAGE = """{% extends "layout" %}{% block content %}
<h1>{{ note.title }}</h1>
<div class="body">{{ note.body }}</div>
<p><a href="/notes">All notes</a></p>
{% endblock %}"""

ACTIVITY_PAGE = """{% extends "layout" %}{% block content %}
<h1>Recent activity</h1>
<ol>
{% for item in items %}  <li>{{ item }}</li>
{% endfor %}</ol>
{% endblock %}"""


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev-only-secret-key")
    app.jinja_loader = DictLoader({"layout": LAYOUT, "login": LOGIN_PAGE, "notes": NOTES_PAGE,
                                   "note": NOTE_PAGE, "activity": ACTIVITY_PAGE})
    engine = create_engine(database_url(), pool_pre_ping=False)
    cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                                 decode_responses=True)
    login = LoginManager(app)
    login.login_view = "login_page"

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        with Session(engine) as db:
            return db.get(User, int(user_id))

    def remember(user_id: int, what: str) -> None:
        key = f"activity:{user_id}"
        cache.lpush(key, what)
        cache.ltrim(key, 0, 9)

    @app.get("/login")
    def login_page():
        return render_template("login", form=LoginForm(), failed=False)

    @app.post("/login")
    def login_submit():
        form = LoginForm()
        if not form.validate_on_submit():
            return render_template("login", form=form, failed=True), 400
        with Session(engine) as db:
            user = db.scalar(select(User).where(User.email == form.email.data))
            if user is None or not check_password_hash(user.password_hash, form.password.data or ""):
                return render_template("login", form=form, failed=True), 401
            login_user(user)
            remember(user.id, "signed in")
        return redirect(url_for("notes_page"))

    @app.get("/notes")
    @login_required
    def notes_page():
        with Session(engine) as db:
            notes = db.scalars(select(Note).where(Note.user_id == current_user.id).order_by(Note.id)).all()
            return render_template("notes", notes=notes, form=NoteForm(), logout=LogoutForm())

    @app.post("/notes")
    @login_required
    def add_note():
        form = NoteForm()
        if not form.validate_on_submit():
            abort(400)
        with Session(engine) as db:
            note = Note(user_id=current_user.id, title=form.title.data, body=form.body.data or "")
            db.add(note)
            db.commit()
            remember(current_user.id, f"added {note.title}")
            return redirect(url_for("note_page", note_id=note.id))

    @app.get("/notes/<int:note_id>")
    @login_required
    def note_page(note_id: int):
        with Session(engine) as db:
            note = db.get(Note, note_id)
            if note is None or note.user_id != current_user.id:
                abort(404)
            return render_template("note", note=note)

    @app.get("/activity")
    @login_required
    def activity():
        return render_template("activity", items=cache.lrange(f"activity:{current_user.id}", 0, -1))

    @app.post("/logout")
    @login_required
    def logout():
        if not LogoutForm().validate_on_submit():
            abort(400)
        logout_user()
        return redirect(url_for("login_page"))

    return app


def add_user(email: str, password: str) -> None:
    engine = create_engine(database_url())
    Base.metadata.create_all(engine)
    with Session(engine) as db:
        db.add(User(email=email, password_hash=generate_password_hash(password)))
        db.commit()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add-user"]:
        add_user(sys.argv[2], os.environ["NOTES_PASSWORD"])
        sys.exit(0)
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")),
                     threaded=True)
