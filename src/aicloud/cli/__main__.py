from aicloud.cli.main import main

main()
