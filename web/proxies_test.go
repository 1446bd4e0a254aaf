package web_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"gqlauth/web"
)

func TestProxies_ClientIP(t *testing.T) {
	proxies, err := web.ParseProxies("10.0.0.0/8, 192.168.1.1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote, xff, want string
	}{
		{"DirectClientIgnoresHeader", "203.0.113.7:5555", "1.2.3.4", "203.0.113.7"},
		{"TrustedProxyUsesHeader", "10.1.2.3:5555", "198.51.100.9", "198.51.100.9"},
		{"RightmostUntrustedHop", "10.1.2.3:5555", "6.6.6.6, 198.51.100.9, 10.9.9.9", "198.51.100.9"},
		{"SingleTrustedIP", "192.168.1.1:1", "198.51.100.9", "198.51.100.9"},
		{"OtherPrivateIPNotTrusted", "192.168.1.2:1", "198.51.100.9", "192.168.1.2"},
		{"PortSuffixedHop", "10.1.2.3:5555", "198.51.100.9:61000", "198.51.100.9"},
		{"TrustedHopWithPort", "10.1.2.3:5555", "198.51.100.9, 10.9.9.9:443", "198.51.100.9"},
		{"AllHopsTrusted", "10.1.2.3:5555", "10.7.7.7, 10.9.9.9", "10.7.7.7"},
		{"NoHeaderFromProxy", "10.1.2.3:5555", "", "10.1.2.3"},
		{"IPv6Client", "[2001:db8::1]:443", "", "2001:db8::1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/query", nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := proxies.ClientIP(r); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
	if _, err := web.ParseProxies("10.0.0.0/33"); err == nil {
		t.Fatal("bad prefix accepted")
	}
}

func TestProxies_ClientIP_UnparsableEntryIsAClientOfItsOwnNeverTheProxy(t *testing.T) {
	proxies, err := web.ParseProxies("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	const proxy = "10.1.2.3"
	cases := []struct {
		name   string
		values []string // X-Forwarded-For header lines, as the trusted proxy sent them
		want   string
	}{
		{"Garbage", []string{"not-an-ip"}, `xff:"not-an-ip"`},
		{"EmptyHeader", []string{""}, `xff:""`},
		{"EmptyRightmostEntry", []string{"198.51.100.9, "}, `xff:""`},
		{"EmptyEntryBeforeTrustedHop", []string{"198.51.100.9, , 10.9.9.9"}, `xff:""`},
		{"Unknown", []string{"unknown"}, `xff:"unknown"`},
		{"ObfuscatedIdentifier", []string{"_hidden"}, `xff:"_hidden"`},
		{"OtherObfuscatedIdentifier", []string{"_SEVKISEK"}, `xff:"_SEVKISEK"`},
		{"ForwardedSyntax", []string{`for="_gazonk"`}, `xff:"for=\"_gazonk\""`},
		{"UnparsableBehindTrustedHop", []string{"198.51.100.9, garbage, 10.9.9.9"}, `xff:"garbage"`},
		{"GarbageOnASecondHeaderLine", []string{"198.51.100.9", "garbage"}, `xff:"garbage"`},
		{"BadPort", []string{"198.51.100.9:http"}, `xff:"198.51.100.9:http"`},
		{"OneBracket", []string{"[2001:db8::1"}, `xff:"[2001:db8::1"`},
		{"IPv4InBrackets", []string{"[198.51.100.9]"}, `xff:"[198.51.100.9]"`},
		// Forms of an address are that address, whatever the port.
		{"PortSuffixed", []string{"1.2.3.4:5"}, "1.2.3.4"},
		{"IPv6WithPort", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv6InBrackets", []string{"[2001:db8::1]"}, "2001:db8::1"},
		{"IPv6WithZone", []string{"fe80::1%eth0"}, "fe80::1"},
		{"IPv4Mapped", []string{"::ffff:198.51.100.9"}, "198.51.100.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/query", nil)
			r.RemoteAddr = proxy + ":5555"
			for _, v := range c.values {
				r.Header.Add("X-Forwarded-For", v)
			}
			got := proxies.ClientIP(r)
			if got == proxy || strings.HasPrefix(got, "10.") {
				t.Fatalf("%q landed in a proxy's bucket: %s", c.values, got)
			}
			if got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
	t.Run("LongEntryIsCut", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/query", nil)
		r.RemoteAddr = proxy + ":5555"
		r.Header.Set("X-Forwarded-For", strings.Repeat("é", 10_000))
		if got := proxies.ClientIP(r); len(got) > 80 || !utf8.ValidString(got) || !strings.HasPrefix(got, `xff:"`) {
			t.Fatalf("got %d bytes: %q", len(got), got)
		}
	})
}
