#version 150
// Roads: ribbons of asphalt; texcoord u runs along the road in road widths, v across (0..1).
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec2 u_fog_range;
in vec4 p3d_Vertex;
in vec4 p3d_Color;
in vec2 p3d_MultiTexCoord0;
out vec4 v_color;
out vec2 v_uv;
out float v_fog;

void main() {
    v_color = p3d_Color;
    v_uv = p3d_MultiTexCoord0;
    float dist = length((p3d_ModelViewMatrix * p3d_Vertex).xyz);
    v_fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
}
