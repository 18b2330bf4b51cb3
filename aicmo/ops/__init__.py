"""Operations shared by every face (CLI, web): no Celery, no HTTP, no terminal."""
