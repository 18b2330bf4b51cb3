"""Operations shared by every face (cli, web, tasks): no Celery, no HTTP, no terminal."""
