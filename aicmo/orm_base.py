"""The declarative base of every model (the ORM), apart from aicmo.db so that importing the
engine and its column types does not import the ORM (see aicmo.db)."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from aicmo.db import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
