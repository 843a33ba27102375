from dafsl.report import main

main()
