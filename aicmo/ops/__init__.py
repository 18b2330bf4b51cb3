"""Operations shared by every face (CLI, console, JSON API): no Celery, HTTP or terminal."""
