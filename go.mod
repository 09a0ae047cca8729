module github.com/ddinit/ddinit

go 1.26

require (
	github.com/sirupsen/logrus v1.9.3
	golang.org/x/sys v0.38.0
)
