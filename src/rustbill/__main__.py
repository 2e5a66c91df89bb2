from rustbill.cli import main

main()
