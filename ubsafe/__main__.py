from ubsafe.cli import main

main()
