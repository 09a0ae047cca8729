// Command ddinit is the init daemon of Docker Desktop's WSL 2 bootstrap
// distro. All behaviour lives in the cli package and below.
package main

import (
	"os"

	"github.com/ddinit/ddinit/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
