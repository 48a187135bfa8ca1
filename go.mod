module github.com/authproxy/authproxy

go 1.26.8

require (
	github.com/gorilla/mux v1.8.1 // indirect
	github.com/lmittmann/tint v1.2.1 // indirect
	github.com/sethvargo/go-retry v0.5.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/oauth2 v0.38.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
