"""One module per subcommand: Typer options, a call into the library, and the printing. No heavy imports here."""
