// Command etcd is etcd's own server main, rebuilt from the go.etcd.io/etcd/server/v3 module.
//
// `go install go.etcd.io/etcd/server/v3@vX` refuses to work because etcd's go.mod has replace
// directives; a wrapper module whose main does exactly what etcd's server/main.go does avoids that.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
