package main

// The admin commands (login, tenants, agents, keys, and the remote audit commands) talk to a
// running kernel over its HTTP API through apiClient. Errors of the API are RFC 9457 problems;
// they become problemError, printed by run() as
//
//	nops: <title>: <detail> (<field>: <reason>, …) [request id …]
//
// Credentials are sent, never printed: the only secrets a command writes are the access token of
// `nops login` and the new API key secret of `keys create|rotate`, which are their purpose.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nops-kernel/nops/internal/buildinfo"
)

const (
	defaultServer = "http://127.0.0.1:8080"
	outputTable   = "table"
	outputJSON    = "json"
	// maxResponseBytes bounds what the client reads of one response.
	maxResponseBytes = 32 << 20
	// requestTimeout bounds one HTTP exchange with the kernel.
	requestTimeout = 60 * time.Second
	// maxPageSize is the largest page the API serves (components.parameters.Limit).
	maxPageSize = 500
)

// clientFlags are the connection settings shared by the commands that talk to a running kernel.
// Flags win over the environment (NOPS_SERVER, NOPS_TOKEN, NOPS_API_KEY).
type clientFlags struct {
	server string
	token  string
	apiKey string
	tenant string
	output string
}

// bind declares the flags on fs. withTenant adds --tenant (operations that act in a tenant);
// withOutput adds -o/--output table|json.
func (f *clientFlags) bind(fs *pflag.FlagSet, withTenant, withOutput bool) {
	fs.StringVar(&f.server, "server", "", "base URL of the kernel's HTTP API (env NOPS_SERVER, default "+defaultServer+")")
	fs.StringVar(&f.token, "token", "", "bearer access token, e.g. from 'nops login' (env NOPS_TOKEN)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key nops_<keyid>_<secret>, sent as X-API-Key (env NOPS_API_KEY)")
	if withTenant {
		fs.StringVar(&f.tenant, "tenant", "", "tenant to act in, by id or name (SUPER_ADMIN only; others act in their own)")
	}
	if withOutput {
		fs.StringVarP(&f.output, "output", "o", outputTable, "output format: table or json (the API's JSON, indented)")
	}
}

// remote adapts fn to a cobra RunE: it builds the API client from the flags and the environment,
// runs fn and releases the client's connections.
func (c *cli) remote(f *clientFlags, fn func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		api, err := c.newAPIClient(f)
		if err != nil {
			return err
		}
		defer api.close()
		return fn(cmd.Context(), cmd, api, args)
	}
}

// newAPIClient resolves the server, the credential and the output format.
func (c *cli) newAPIClient(f *clientFlags) (*apiClient, error) {
	switch f.output {
	case "", outputTable, outputJSON:
	default:
		return nil, fmt.Errorf("-o/--output: must be table or json, got %q", f.output)
	}
	server := f.server
	if server == "" {
		server, _ = c.env("NOPS_SERVER")
	}
	if server == "" {
		server = defaultServer
	}
	base, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	token, apiKey := f.token, f.apiKey
	if token != "" && apiKey != "" {
		return nil, errors.New("--token and --api-key: give one credential, not both")
	}
	if token == "" && apiKey == "" {
		// From the environment, a token wins: it is what `nops login` prints to be exported.
		if token, _ = c.env("NOPS_TOKEN"); token == "" {
			apiKey, _ = c.env("NOPS_API_KEY")
		}
	}
	token = strings.TrimSpace(token)
	if len(token) > 7 && strings.EqualFold(token[:7], "bearer ") {
		token = strings.TrimSpace(token[7:])
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &apiClient{
		base:      base,
		hc:        &http.Client{Transport: tr, Timeout: requestTimeout, CheckRedirect: sameOrigin},
		transport: tr,
		token:     token,
		apiKey:    strings.TrimSpace(apiKey),
		tenantRef: strings.TrimSpace(f.tenant),
		output:    f.output,
	}, nil
}

// sameOrigin follows redirects within the kernel's origin only: X-API-Key, unlike Authorization,
// would be forwarded to another host. Elsewhere the 3xx itself is the answer, and an error.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if first := via[0].URL; req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		return http.ErrUseLastResponse
	}
	return nil
}

// parseServer accepts an http(s) URL, or host:port (as in --http-addr), which means http.
func parseServer(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--server / NOPS_SERVER: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--server / NOPS_SERVER: scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--server / NOPS_SERVER: want a base URL such as %s, got %q", defaultServer, s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// apiClient sends JSON requests to one kernel with one credential.
type apiClient struct {
	base      *url.URL
	hc        *http.Client
	transport *http.Transport
	token     string
	apiKey    string
	tenantRef string // --tenant as given: an id or a name
	tenantID  string // tenantRef resolved to an id
	output    string
}

func (a *apiClient) close() { a.transport.CloseIdleConnections() }

func (a *apiClient) json() bool { return a.output == outputJSON }

// apiResponse is a successful (2xx) response with its body read.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request. body, when not nil, is sent as application/json. A response outside
// 2xx is returned as a *problemError.
func (a *apiClient) do(ctx context.Context, method, path string, query url.Values, body []byte, header http.Header) (*apiResponse, error) {
	// path arrives escaped (url.PathEscape of ids), so it is parsed, not assigned to URL.Path.
	u, err := url.Parse(a.base.String() + path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "nops-cli/"+buildinfo.Version())
	switch {
	case a.token != "":
		req.Header.Set("Authorization", "Bearer "+a.token)
	case a.apiKey != "":
		req.Header.Set("X-API-Key", a.apiKey)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, a.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		p := parseProblem(resp, data)
		if resp.StatusCode == http.StatusUnauthorized && a.token == "" && a.apiKey == "" {
			p.hint = "no credential given: pass --token (env NOPS_TOKEN, see `nops login`) or --api-key (env NOPS_API_KEY)"
		}
		return nil, p
	}
	return &apiResponse{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// transportError says which kernel could not be reached, without Go's request dump.
func (a *apiClient) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the kernel at %s did not answer in time (--server / NOPS_SERVER): %w", a.base, err)
	}
	return fmt.Errorf("cannot reach the kernel at %s (--server / NOPS_SERVER): %w", a.base, err)
}

// getJSON GETs path and decodes the body into v (when not nil); it returns the raw body.
func (a *apiClient) getJSON(ctx context.Context, path string, query url.Values, v any) ([]byte, error) {
	resp, err := a.do(ctx, http.MethodGet, path, query, nil, nil)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := decodeJSON(resp.body, v); err != nil {
			return nil, fmt.Errorf("GET %s: %w", path, err)
		}
	}
	return resp.body, nil
}

// sendJSON sends a request with body (encoded unless it is already []byte or json.RawMessage)
// and decodes the answer into v when v is not nil and the answer has a body.
func (a *apiClient) sendJSON(ctx context.Context, method, path string, query url.Values, body any, header http.Header, v any) (*apiResponse, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case json.RawMessage:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("encode %s %s request: %w", method, path, err)
		}
	}
	resp, err := a.do(ctx, method, path, query, raw, header)
	if err != nil {
		return nil, err
	}
	if v != nil && len(resp.body) > 0 {
		if err := decodeJSON(resp.body, v); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp, nil
}

func decodeJSON(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("unexpected response from the kernel: %w", err)
	}
	return nil
}

// listAll follows next_cursor from the first page to the last and returns every item as the
// API sent it. When progress is not nil, a line counting the items is kept up to date on it.
func (a *apiClient) listAll(ctx context.Context, path string, query url.Values, pageSize int, progress io.Writer) ([]json.RawMessage, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if pageSize > 0 {
		q.Set("limit", fmt.Sprint(pageSize))
	}
	var all []json.RawMessage
	seen := map[string]bool{}
	shown := false
	for page := 1; ; page++ {
		var p struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		if _, err := a.getJSON(ctx, path, q, &p); err != nil {
			return nil, err
		}
		all = append(all, p.Items...)
		if progress != nil && page > 1 {
			fmt.Fprintf(progress, "\rfetched %d items (page %d)…", len(all), page)
			shown = true
		}
		if p.NextCursor == "" {
			break
		}
		if seen[p.NextCursor] {
			return nil, fmt.Errorf("GET %s: the kernel returned cursor %q twice", path, p.NextCursor)
		}
		seen[p.NextCursor] = true
		q.Set("cursor", p.NextCursor)
	}
	if shown {
		fmt.Fprint(progress, "\r\033[K") // erase the progress line
	}
	return all, nil
}

// tenantQuery returns the query naming the --tenant to act in (empty without --tenant). A name
// is resolved to the tenant's id once, by listing the tenants (which only SUPER_ADMIN may).
func (a *apiClient) tenantQuery(ctx context.Context) (url.Values, error) {
	q := url.Values{}
	if a.tenantRef == "" {
		return q, nil
	}
	if a.tenantID == "" {
		id, err := a.resolveTenant(ctx, a.tenantRef)
		if err != nil {
			return nil, fmt.Errorf("--tenant: %w", err)
		}
		a.tenantID = id
	}
	q.Set("tenant", a.tenantID)
	return q, nil
}

// resolveTenant returns ref when it is a tenant id (ten_…), else the id of the tenant named ref.
func (a *apiClient) resolveTenant(ctx context.Context, ref string) (string, error) {
	if strings.HasPrefix(ref, "ten_") {
		return ref, nil
	}
	items, err := a.listAll(ctx, "/v1/tenants", nil, maxPageSize, nil)
	if err != nil {
		return "", fmt.Errorf("look up tenant %q: %w", ref, err)
	}
	for _, raw := range items {
		var t struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return "", fmt.Errorf("look up tenant %q: %w", ref, err)
		}
		if t.Name == ref {
			return t.ID, nil
		}
	}
	return "", fmt.Errorf("no tenant named %q", ref)
}

// problemError is an error answer of the API: an RFC 9457 problem, or whatever else a server
// or proxy sent on the way, reduced to a status and a line of text.
type problemError struct {
	Status    int
	Title     string
	Detail    string
	Code      string
	RequestID string
	Fields    []fieldError
	hint      string
}

type fieldError struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

func (p *problemError) Error() string {
	var b strings.Builder
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	if title == "" {
		title = fmt.Sprintf("HTTP %d", p.Status)
	}
	b.WriteString(clean(title))
	if p.Detail != "" {
		b.WriteString(": " + clean(p.Detail))
	}
	if len(p.Fields) > 0 {
		parts := make([]string, len(p.Fields))
		for i, f := range p.Fields {
			parts[i] = clean(f.Name) + ": " + clean(f.Reason)
		}
		b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	}
	if p.RequestID != "" {
		b.WriteString(" [request id " + clean(p.RequestID) + "]")
	}
	if p.hint != "" {
		b.WriteString("\nhint: " + p.hint)
	}
	return b.String()
}

// parseProblem reads an error response: a problem+json body when there is one, else the status
// and the first line of a plain-text body.
func parseProblem(resp *http.Response, body []byte) *problemError {
	p := &problemError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID")}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var wire struct {
			Title     string       `json:"title"`
			Status    int          `json:"status"`
			Detail    string       `json:"detail"`
			Code      string       `json:"code"`
			RequestID string       `json:"request_id"`
			Errors    []fieldError `json:"errors"`
		}
		if json.Unmarshal(body, &wire) == nil && (wire.Title != "" || wire.Detail != "" || wire.Code != "") {
			p.Title, p.Detail, p.Code, p.Fields = wire.Title, wire.Detail, wire.Code, wire.Errors
			if wire.RequestID != "" {
				p.RequestID = wire.RequestID
			}
			return p
		}
	}
	p.Title = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
		p.Detail = "redirected to " + loc + ", not followed: point --server (NOPS_SERVER) at the kernel itself"
		return p
	}
	// A plain-text line may explain (a proxy's "upstream timed out"); HTML pages are left out.
	if mt == "" || mt == "text/plain" || strings.HasSuffix(mt, "json") {
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		p.Detail = line
	}
	return p
}

// clean makes text from the server safe to print: control characters (escape sequences, tabs
// and newlines that would break a table) become spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// printJSON writes raw JSON indented, ending in a newline.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("indent JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printItems writes items as the API's list shape, {"items": […]}, indented.
func printItems(w io.Writer, items []json.RawMessage) error {
	if items == nil {
		items = []json.RawMessage{}
	}
	raw, err := json.Marshal(struct {
		Items []json.RawMessage `json:"items"`
	}{items})
	if err != nil {
		return fmt.Errorf("encode items: %w", err)
	}
	return printJSON(w, raw)
}

// table writes rows under a header with text/tabwriter; cells are cleaned.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = clean(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// details writes one resource as FIELD value lines.
func details(w io.Writer, fields [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t%s\n", f[0], clean(f[1]))
	}
	return tw.Flush()
}

// progressWriter returns w when it is a terminal (where a progress line helps), else nil.
func progressWriter(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}

// readInput reads a file named by -f; "-" is standard input.
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	var (
		data []byte
		err  error
	)
	if name == "-" {
		data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxResponseBytes))
		name = "standard input"
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("%s: invalid JSON at line %d, column %d: %w", name, line, col, err)
		}
		return nil, fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%s: want a JSON object", name)
	}
	return data, nil
}

// position converts a byte offset to a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// formatTime renders an RFC 3339 time from the API, "-" when absent.
func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// ago renders how long ago t was, coarsely: 42s, 5m, 3h, 2d.
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) loginCmd() *cobra.Command {
	var (
		f             clientFlags
		username      string
		passwordStdin bool
		passwordFile  string
		scope         string
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Exchange a username and password, or an API key, for an access token and print it",
		Long: "Prints the access token alone on stdout, so that it can be exported:\n\n" +
			"  export NOPS_TOKEN=$(nops login --username admin --password-stdin < password.txt)\n" +
			"  export NOPS_TOKEN=$(nops login --api-key \"$KEY\")\n\n" +
			"The password is read from the first line of standard input (--password-stdin) or of a file\n" +
			"(--password-file); it is never taken from the command line. -o json prints the whole token\n" +
			"response (token type, lifetime, scopes).",
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			req := map[string]string{}
			switch {
			case username != "":
				if f.apiKey != "" {
					return errors.New("--username and --api-key: log in with one or the other")
				}
				pw, err := readPassword(cmd, passwordStdin, passwordFile)
				if err != nil {
					return err
				}
				req["username"], req["password"] = username, pw
			case passwordStdin || passwordFile != "":
				return errors.New("--username is required with --password-stdin or --password-file")
			case f.apiKey != "":
				req["api_key"] = f.apiKey
			default:
				key, _ := c.env("NOPS_API_KEY")
				if key = strings.TrimSpace(key); key == "" {
					return errors.New("give --username with --password-stdin or --password-file, or --api-key (env NOPS_API_KEY)")
				}
				req["api_key"] = key
			}
			if scope != "" {
				req["scope"] = scope
			}
			// The token endpoint takes the credential in its body, not in a header.
			api.token, api.apiKey = "", ""
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/auth/token", nil, req, nil, &tok)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			if tok.AccessToken == "" {
				return errors.New("the kernel answered without an access token")
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok.AccessToken)
			return err
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&f.server, "server", "", "base URL of the kernel's HTTP API (env NOPS_SERVER, default "+defaultServer+")")
	fs.StringVar(&f.apiKey, "api-key", "", "API key to exchange for a token (env NOPS_API_KEY)")
	fs.StringVarP(&f.output, "output", "o", outputTable, "output format: table (the token alone) or json (the token response)")
	fs.StringVar(&username, "username", "", "user to log in as, e.g. admin")
	fs.BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	fs.StringVar(&passwordFile, "password-file", "", "read the password from the first line of this file")
	fs.StringVar(&scope, "scope", "", "space-separated scopes to narrow the token to (default: all granted)")
	cmd.MarkFlagsMutuallyExclusive("password-stdin", "password-file")
	return cmd
}

// readPassword reads the first line of standard input or of a file, without its line ending.
func readPassword(cmd *cobra.Command, fromStdin bool, file string) (string, error) {
	var (
		src  io.Reader
		name string
	)
	switch {
	case fromStdin:
		src, name = cmd.InOrStdin(), "standard input"
	case file != "":
		fh, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer fh.Close()
		src, name = fh, file
	default:
		return "", errors.New("--password-stdin or --password-file is required with --username")
	}
	// A password is at most 72 bytes (bcrypt); read a little more so a longer one is refused by
	// the kernel, not cut here.
	data, err := io.ReadAll(io.LimitReader(src, 4096))
	if err != nil {
		return "", fmt.Errorf("read password from %s: %w", name, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("no password on the first line of %s", name)
	}
	return line, nil
}
