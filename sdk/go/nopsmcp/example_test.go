package nopsmcp_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/nops-kernel/nops/sdk/go/nopsmcp"
)

// An agent calls another agent's tool through the kernel with its API key.
func Example() {
	ctx := context.Background()
	c, err := nopsmcp.Connect(ctx, os.Getenv("NOPS_URL"), nopsmcp.Options{APIKey: os.Getenv("NOPS_API_KEY")})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	tools, err := c.Tools(ctx)
	if err != nil {
		log.Print(err)
		return
	}
	for _, t := range tools {
		fmt.Println(t.Name, "—", t.Description)
	}
	var out struct {
		Summary string `json:"summary"`
	}
	if err := c.CallJSON(ctx, "text.summarize", map[string]string{"text": "…"}, &out); err != nil {
		log.Print(err) // a *nopsmcp.ToolError when the call ran and failed
		return
	}
	fmt.Println(out.Summary)
}
