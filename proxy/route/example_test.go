package route_test

import (
	"fmt"

	"github.com/portico-proxy/portico/proxy/route"
)

func ExampleTable_Match() {
	type upstream string
	tab, err := route.New([]route.Route[upstream]{
		{Pattern: "/api/*", Value: "api:8080"},
		{Pattern: "/api/v2/*", Value: "api-v2:8080"},
		{Pattern: "/health", Value: "local"},
	})
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/api/v2/users", "/apix", "//api/x", "/api/../admin", "/%61pi/x"} {
		v, pattern, ok := tab.Match(path)
		fmt.Printf("%-14s %-10s %-12q %v\n", path, pattern, v, ok)
	}
	// Output:
	// /api/v2/users  /api/v2/*  "api-v2:8080" true
	// /apix                     ""           false
	// //api/x        /api/*     "api:8080"   true
	// /api/../admin             ""           false
	// /%61pi/x       /api/*     "api:8080"   true
}

func ExampleStripPrefix() {
	for _, path := range []string{"/api", "/api/users", "//api/./users", "/apix"} {
		fmt.Printf("%s → %s\n", path, route.StripPrefix(path, "/api"))
	}
	// Output:
	// /api → /
	// /api/users → /users
	// //api/./users → /users
	// /apix → /apix
}

func ExampleNew_error() {
	_, err := route.New([]route.Route[int]{{Pattern: "/api/../admin/*"}})
	fmt.Println(err)
	_, err = route.New([]route.Route[int]{{Pattern: "/%7Euser/*"}})
	fmt.Println(err)
	// Output:
	// route path "/api/../admin/*": has a dot-segment ("." or "..")
	// route path "/%7Euser/*": is not in normal form: write "/~user/*"
}
