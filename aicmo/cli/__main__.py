from aicmo.cli import main

main()
